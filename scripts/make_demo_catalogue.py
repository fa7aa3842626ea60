"""Write the demo catalogue that ships with the repo (service/demo/catalogue.jsonl).

Deterministic for its seed: a few hundred office and home-office items over a dozen categories,
each with a title, description, brand, price and attributes. Also used, with a larger --count,
to make synthetic catalogues for the benchmarks.

    python scripts/make_demo_catalogue.py --out service/demo/catalogue.jsonl
    python scripts/make_demo_catalogue.py --count 100000 --out /tmp/synthetic.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys

# category -> (nouns, brands, price range, features)
CATEGORIES = {
    "Keyboards": (["mechanical keyboard", "wireless keyboard", "compact keyboard", "ergonomic keyboard", "low-profile keyboard"],
                  ["Logitech", "Keychron", "Microsoft", "Das Keyboard", "Razer"], (19, 189),
                  ["quiet switches", "backlit keys", "Bluetooth and USB-C", "split layout", "hot-swappable switches", "numeric keypad"]),
    "Mice": (["wireless mouse", "vertical mouse", "trackball", "gaming mouse", "travel mouse"],
             ["Logitech", "Microsoft", "Razer", "Anker", "Kensington"], (9, 129),
             ["silent clicks", "ergonomic grip", "rechargeable battery", "adjustable DPI", "programmable buttons"]),
    "Monitors": (["27-inch monitor", "24-inch monitor", "ultrawide monitor", "4K monitor", "portable monitor"],
                 ["Dell", "LG", "Samsung", "ASUS", "BenQ"], (129, 899),
                 ["IPS panel", "USB-C with power delivery", "height-adjustable stand", "eye-care flicker-free", "144 Hz refresh"]),
    "Office Chairs": (["ergonomic office chair", "mesh task chair", "executive chair", "drafting stool", "kneeling chair"],
                      ["Herman Miller", "Steelcase", "HON", "Branch", "Amazon Basics"], (89, 1299),
                      ["lumbar support", "adjustable armrests", "breathable mesh back", "tilt lock", "headrest"]),
    "Desks": (["standing desk", "writing desk", "L-shaped desk", "desk converter", "compact desk"],
              ["Uplift", "Fully", "FlexiSpot", "IKEA", "Bush"], (79, 999),
              ["electric height adjustment", "memory presets", "cable tray", "bamboo top", "steel frame"]),
    "Pens": (["gel pen set", "ballpoint pens", "fountain pen", "fineliner set", "rollerball pen"],
             ["Pilot", "Uni-ball", "Zebra", "Lamy", "Paper Mate"], (3, 59),
             ["quick-drying ink", "fine 0.5 mm tip", "refillable", "smear-proof", "assorted colours"]),
    "Notebooks": (["dotted notebook", "spiral notebook", "hardcover journal", "legal pad", "smart notebook"],
                  ["Moleskine", "Leuchtturm1917", "Rocketbook", "Five Star", "Oxford"], (4, 39),
                  ["120 gsm paper", "numbered pages", "lay-flat binding", "perforated sheets", "reusable pages"]),
    "Staplers": (["desktop stapler", "heavy-duty stapler", "electric stapler", "mini stapler", "long-reach stapler"],
                 ["Swingline", "Bostitch", "PaperPro", "Rapid", "Max"], (6, 89),
                 ["jam-free mechanism", "staples 20 sheets", "staples 100 sheets", "spring-powered", "built-in remover"]),
    "Printers": (["laser printer", "inkjet printer", "all-in-one printer", "label printer", "photo printer"],
                 ["HP", "Brother", "Canon", "Epson", "DYMO"], (49, 649),
                 ["duplex printing", "Wi-Fi and AirPrint", "automatic document feeder", "low cost per page", "compact footprint"]),
    "Headphones": (["noise-cancelling headphones", "USB headset", "wireless earbuds", "open-back headphones", "conference headset"],
                   ["Sony", "Jabra", "Bose", "Sennheiser", "Logitech"], (25, 399),
                   ["active noise cancelling", "boom microphone", "30-hour battery", "multipoint Bluetooth", "memory foam cushions"]),
    "Desk Lamps": (["LED desk lamp", "architect lamp", "monitor light bar", "clamp lamp", "task light"],
                   ["BenQ", "TaoTronics", "Philips", "IKEA", "Lepro"], (15, 199),
                   ["dimmable", "adjustable colour temperature", "USB charging port", "auto-dimming sensor", "flicker-free"]),
    "Backpacks": (["laptop backpack", "rolling laptop bag", "messenger bag", "travel backpack", "laptop sleeve"],
                  ["Targus", "Samsonite", "Peak Design", "Herschel", "Incase"], (19, 299),
                  ["padded 16-inch laptop compartment", "water-resistant fabric", "luggage strap", "anti-theft pocket", "lifetime warranty"]),
}
ADJECTIVES = ["Classic", "Pro", "Slim", "Deluxe", "Essential", "Plus", "Studio", "Air", "Max", "Go", "Ultra", "Lite"]
COLOURS = ["black", "white", "grey", "blue", "red", "green", "silver"]


def make_items(count: int, seed: int):
    rng = random.Random(seed)
    names = list(CATEGORIES)
    for n in range(count):
        category = names[n % len(names)]
        nouns, brands, (lo, hi), features = CATEGORIES[category]
        noun = rng.choice(nouns)
        brand = rng.choice(brands)
        picked = rng.sample(features, k=2)
        colour = rng.choice(COLOURS)
        model = f"{rng.choice(ADJECTIVES)} {rng.randint(100, 999)}"
        price = round(rng.uniform(lo, hi), 2)
        yield {
            "id": f"demo-{n:06d}",
            "title": f"{brand} {model} {noun}, {colour}",
            "description": (
                f"A {noun} from {brand} with {picked[0]} and {picked[1]}. "
                f"Finish: {colour}. Good for {rng.choice(['home offices', 'open-plan offices', 'students', 'travel', 'small businesses'])}."
            ),
            "brand": brand,
            "categories": ["Office", category],
            "price": price,
            "attributes": {"colour": colour, "in_stock": rng.random() > 0.1},
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=360)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="-")
    args = parser.parse_args(argv)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    with out:
        for item in make_items(args.count, args.seed):
            out.write(json.dumps(item) + "\n")


if __name__ == "__main__":
    main()
