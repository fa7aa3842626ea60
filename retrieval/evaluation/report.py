"""Writing an evaluation's results: ``report.md`` (tables per slice, best value per column in
bold), ``results.json`` (every number, the configuration and the seed) and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retrieval.evaluation.peers import PREFIX

COLUMNS = ("recall@10", "recall@50", "ndcg@10", "ndcg@50", "mrr", "coverage@10", "ild@10", "gini@10")
LOWER_IS_BETTER = {"gini@10"}
SLICE_TITLES = {
    "all": "All users",
    "cold_items": "Cold items (target never seen in training)",
    "cold_users": "Cold users: one history item, anonymous",
    "cold_users_prefs": "Cold users: no history, stated preferences from their categories",
    "long_tail": "Long tail (target outside the 20% most popular items)",
}


def slice_table(methods: dict[str, dict[str, Any]]) -> list[str]:
    names = [m for m in methods if methods[m].get("users")]
    if not names:
        return ["(no users in this slice)"]
    best = {}
    for col in COLUMNS:
        values = [methods[m][col] for m in names]
        best[col] = min(values) if col in LOWER_IS_BETTER else max(values)
    lines = ["| method | users | " + " | ".join(COLUMNS) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    for m in names:
        cells = []
        for col in COLUMNS:
            text = f"{methods[m][col]:.4f}"
            cells.append(f"**{text}**" if abs(methods[m][col] - best[col]) < 1e-12 else text)
        lines.append(f"| {m} | {methods[m]['users']} | " + " | ".join(cells) + " |")
    return lines


STAGE_TITLES = {"zero_shot": "zero-shot (hybrid retrieval)", "fine_tuned_encoder": "+ fine-tuned encoder",
                "zero_shot_at_encoder_weights": "(zero-shot at the encoder's weights)",
                "sequence_encoder": "+ sequence encoder", "sequence_encoder_alone": "(sequence encoder alone)",
                "reranker": "+ reranker",
                "reranker_retrieval_diversity": "(+ reranker at retrieval's diversity)",
                "reranker_without_encoder": "(reranker over zero-shot, no encoder)"}


def stage_section(stages: dict[str, Any], results: dict[str, Any] | None = None) -> list[str]:
    """The learning stages: NDCG@10 / Recall@10 per slice, and what each trainer decided; the peers
    measured in the same run (``results``' ``peer_*`` methods) as the table's last columns."""
    enc, rr = stages["encoder_training"], stages["reranker_training"]
    names = [n for n in STAGE_TITLES if any(n in row for row in stages["table"].values())]
    diversity = stages.get("diversity")
    titles = [STAGE_TITLES[n] + ("" if stages["accepted"][n] else " (rejected, measured anyway)") for n in names]
    peers = sorted({m for row in (results or {}).get("slices", {}).values() for m in row if m.startswith(PREFIX)})
    titles += [f"peer: {p.removeprefix(PREFIX)}" for p in peers]
    lines = [
        "## Learning from the log: zero-shot -> + fine-tuned encoder -> + sequence encoder -> + reranker",
        "",
        f"The models were trained inside this run on the training part only ({stages['training_users']} users' "
        "sequences without their validation and test targets"
        + (f", and without the {stages['cold_items_left_out_of_training']} cold items, as new to the trainers as "
           "to their slice" if stages.get("cold_items_left_out_of_training") else "")
        + "); each stage is evaluated like the methods above. "
        "Cells: NDCG@10 / Recall@10 (change in NDCG@10 against the stage it builds on, user by user, ± its "
        "standard error: the sequence encoder joins the retrieval of the "
        f"{'fine-tuned' if enc['accepted'] else 'zero-shot'} encoder, and the reranker builds on the last "
        "accepted stage; a column in brackets compares with "
        "the stage it stands beside: zero-shot at the encoder's weights with the fine-tuned encoder, so its "
        "change is minus the encoder's own part; the sequence encoder alone with the fusion it joins; the other "
        "rankers with the reranker as served).",
        *([f"Diversity as served: retrieval's lists MMR {diversity['retrieval']:g}, reranked lists "
           f"{diversity['reranked']:g} (each chosen on validation by `benchmarks/diversity.py`); the last column is "
           f"the same ranker with MMR {diversity['retrieval']:g}."]
          if diversity and "reranker_retrieval_diversity" in names else []),
        "",
        "| slice | users | " + " | ".join(titles) + " |",
        "|---|---:|" + "---:|" * (len(names) + len(peers)),
    ]
    for slice_name, row in stages["table"].items():
        cells = []
        for n in names:
            m = row.get(n)
            if not m or not m.get("users"):
                cells.append("-")
                continue
            change = m.get("change")  # against the stage it builds on, user by user (evaluate_stages)
            delta = f" ({change['ndcg@10']:+.4f} ± {change['standard_error']:.4f})" if change else ""
            cells.append(f"{m['ndcg@10']:.4f} / {m['recall@10']:.4f}{delta}")
        for p in peers:
            m = results["slices"].get(slice_name, {}).get(p)
            cells.append(f"{m['ndcg@10']:.4f} / {m['recall@10']:.4f}" if m and m.get("users") else "-")
        users = next((row[n]["users"] for n in names if n in row), 0)
        lines.append(f"| {slice_name} | {users} | " + " | ".join(cells) + " |")
    epoch_s = ", ".join(f"{e['seconds']:.0f} s" for e in enc.get("epochs", []))
    ranker, ce = rr.get("ranker") or {}, rr.get("cross_encoder") or {}
    if ce.get("groups"):
        ce_epochs = ", ".join(f"{e['seconds']:.0f} s" for e in ce.get("epochs", []))
        ce_text = (f"cross-encoder trained on {ce['groups']} groups ({ce['pairs_per_epoch']} pairs per epoch, "
                   f"epochs {ce_epochs}), {'kept' if ce.get('kept') else 'not kept'} as a feature")
    else:
        ce_text = f"cross-encoder not trained ({ce.get('why', 'off')})"
    offered = rr.get("sequence")
    if offered:
        tried = "; ".join(f"{name} {v['gain']:+.4f} ± {v['standard_error']:.4f} against {v['against']}"
                          + ("" if v["competes"] else " (not clearly better)") for name, v in offered["variants"].items())
        ce_text += (f"; sequence encoder offered as a feature ({tried}), "
                    f"{'read' if offered.get('kept') else 'not read'} by the ranker that serves")
    validation = "; ".join(f"{name} {v['ndcg@10']:.4f}" for name, v in (rr.get("validation") or {}).items())
    without = stages.get("reranker_without_encoder_training")
    lines += [
        "",
        f"- Encoder: {enc['pairs']} pairs, epochs {epoch_s}; {'accepted' if enc['accepted'] else 'REJECTED'}: "
        f"{enc['reason']}.",
        *([_sequence_line(stages["sequence_training"])] if stages.get("sequence_training") else []),
        f"- Reranker: learned ranker on {ranker.get('lists', 0)} lists ({ranker.get('rows', 0)} candidates, "
        f"{ranker.get('positives', 0)} taken next); {ce_text}; validation NDCG@10: {validation}; "
        f"{'accepted' if rr['accepted'] else 'REJECTED'}: {rr['reason']}.",
        *(["- Peers (trained on the same training part, ranked for the same users): "
           + "; ".join(f"{name}: {note}" for name, note in results["peers"]["notes"].items()) + "."]
          if peers and (results or {}).get("peers", {}).get("notes") else []),
        *([f"- Reranker over zero-shot retrieval (trained the same way, for the comparison in brackets): "
           f"{'accepted' if without['accepted'] else 'REJECTED'}: {without['reason']}."] if without else []),
        f"- A service trained like this would serve: encoder {stages['serving']['encoder']}, sequence encoder "
        f"{stages['serving'].get('sequence_encoder', 'none')}, reranker "
        f"{stages['serving']['reranker']}, fusion weights "
        f"{', '.join(f'{k} {v:g}' for k, v in (stages['serving'].get('weights') or {}).items())}. "
        f"The fine-tuned encoder stage is measured with the weights chosen with it "
        f"({', '.join(f'{k} {v:g}' for k, v in (enc.get('fusion_weights') or {}).items()) or 'as configured'}). "
        "Rejected models are still measured above so their effect is on record.",
    ]
    return lines


def _sequence_line(seq: dict[str, Any]) -> str:
    epochs = seq.get("epochs") or []
    left_out = f" (each user's {seq['left_out']} newest items left out)" if "left_out" in seq else ""
    return (f"- Sequence encoder: {seq['windows']} training windows from {seq['train_users']} users{left_out}, "
            f"{len(epochs)} epochs in {seq['train_seconds']:.0f} s on {seq['device']} (early stopping on "
            f"{seq['early_stop_users']} users' second-newest items); fusion weight {seq['fusion_weight']:g}; "
            f"{'accepted' if seq['accepted'] else 'REJECTED'}: {seq['reason']}.")


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    ds = results["dataset"]
    out = [
        f"# Evaluation: {ds['name']}",
        "",
        f"{ds['items']} items, {ds['users']} users, {ds['interactions']} interactions; split `{cfg['split']}` "
        f"(leave-one-out, full ranking over the catalogue minus each user's history), "
        f"{cfg['evaluated_users']} users evaluated, seed {cfg['seed']}, encoder {cfg['encoder']} on {cfg['device']}, "
        f"{results['seconds'] / 60:.1f} minutes.",
        "",
        f"Cold items: {cfg['cold_items']} items ({cfg['cold_item_fraction']:.0%}, seeded) removed from every training "
        f"interaction. Long tail: targets outside the {cfg['long_tail_head_items']} most popular items. "
        "Baselines: `popularity`, `itemknn` (co-occurrence, history weighted 0.8^age), `bm25` (titles of the last 3 "
        "items), `zero_shot` (plain mean of history vectors). Stages: `dense_profile` (our weighted, decayed profile "
        "vector alone), `collaborative_seq` (our sequential co-occurrence alone: items that came soon after a history "
        "item in other users' sequences count more), `hybrid_plain_rrf` (all sources, plain RRF), `hybrid_retrieval` (all sources, fusion that "
        "does not punish items a source has no opinion about). Baselines rank by relevance alone (diversity 0); "
        f"the stages run as the service does, with its default diversity {cfg['recommend'].get('diversity', 0)} "
        "(MMR over the top 50).",
        "",
        "Best value per column in bold (lowest for Gini). Metrics: Recall/NDCG at 10 and 50, MRR@50, catalogue "
        "coverage@10, intra-list diversity@10 (mean pairwise cosine distance), exposure Gini@10.",
    ]
    for name, methods in results["slices"].items():
        out += ["", f"## {SLICE_TITLES.get(name, name)}", ""] + slice_table(methods)
    if "stages" in results:
        out += ["", *stage_section(results["stages"], results)]
    out += ["", "Plots: `recall_at_k.png` (Recall@K, K = 1..50, all users), "
            "`accuracy_vs_diversity.png` (NDCG@10 against intra-list diversity@10, every slice).", ""]
    return "\n".join(out)


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, m in results["slices"]["all"].items():
        if m.get("users"):
            ax.plot(range(1, len(m["recall_curve"]) + 1), m["recall_curve"], label=method)
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title("Recall@K, all users")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "recall_at_k.png", dpi=120)
    plt.close(fig)
    written.append(out / "recall_at_k.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    markers = dict(zip(results["slices"], "osD^v"))
    method_names = list(dict.fromkeys(m for methods in results["slices"].values() for m in methods))
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(method_names)}
    for slice_name, methods in results["slices"].items():
        for method, m in methods.items():
            if m.get("users"):
                ax.scatter(m["ild@10"], m["ndcg@10"], marker=markers.get(slice_name, "o"), s=36,
                           color=colours[method], alpha=0.85)
    # Legend: colour is the method, marker the slice.
    for method in method_names:
        ax.scatter([], [], marker="s", color=colours[method], label=method)
    for slice_name, marker in markers.items():
        ax.scatter([], [], marker=marker, color="grey", label=f"slice: {slice_name}")
    ax.set_xlabel("intra-list diversity@10")
    ax.set_ylabel("NDCG@10")
    ax.set_title("Accuracy vs diversity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_diversity.png", dpi=120)
    plt.close(fig)
    written.append(out / "accuracy_vs_diversity.png")
    return written


def write_report(results: dict[str, Any], out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Per-user ranks stay in memory (paired standard errors); the file keeps the aggregates.
    (out / "results.json").write_text(json.dumps({k: v for k, v in results.items() if k != "ranks"}, indent=2))
    (out / "report.md").write_text(markdown(results))
    return [out / "report.md", out / "results.json", *plots(results, out)]
