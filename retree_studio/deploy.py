"""Deploy the app to a Hugging Face Space in one command: `retree deploy-space OWNER/NAME [--dry-run]`.

The Space gets what the app needs to run (app.py, both packages, the weights and their card, the example
assets, requirements.txt, README.md with the Space's front matter, LICENSE), uploaded with
`huggingface_hub.upload_folder`, which sends binary files through the Hub's large-file path (LFS/Xet):
plain git pushes of the weights are refused by the Hub. `--dry-run` lists every file, its size and how it
would be sent, and uploads nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = ["app.py", "README.md", "LICENSE", "requirements.txt", "retree_core/**/*", "retree_studio/**/*",
           "weights/**/*", "assets/**/*"]
EXCLUDE = ["**/__pycache__/**", "**/*.pyc", "**/.*"]
TEXT_SUFFIXES = {".py", ".md", ".txt", ".json", ".toml", ".typed", ""}  # everything else is binary


def space_files(root: Path = ROOT) -> list[Path]:
    """The files a Space needs, relative to the repository, sorted."""
    found: set[Path] = set()
    for pattern in INCLUDE:
        found.update(p for p in root.glob(pattern) if p.is_file())
    rel = {p.relative_to(root) for p in found}
    return sorted(p for p in rel if not any(p.match(x) or part.startswith(".") or part == "__pycache__"
                                            for x in EXCLUDE for part in p.parts))


def transfer(path: Path, size_bytes: int) -> str:
    """How the Hub takes a file: binary files and anything over 10 MB through its large-file path."""
    return "large-file (LFS/Xet)" if path.suffix not in TEXT_SUFFIXES or size_bytes > 10 * 2**20 else "regular"


def plan(root: Path = ROOT) -> list[tuple[Path, int, str]]:
    return [(p, (root / p).stat().st_size, transfer(p, (root / p).stat().st_size)) for p in space_files(root)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="retree deploy-space", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", help="OWNER/NAME of the Space (created if missing)")
    p.add_argument("--dry-run", action="store_true", help="list the files and how they would be sent; upload nothing")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="a Hub token (default: the one `huggingface-cli login` stored)")
    args = p.parse_args(argv)
    if args.space.count("/") != 1 or not all(args.space.split("/")):
        p.error(f"the Space is OWNER/NAME, got {args.space!r}")
    files = plan()
    for path, size, how in files:
        print(f"{size / 2**20:9.2f} MB  {how:<20} {path}")
    large = sum(size for _, size, how in files if how != "regular")
    print(f"{len(files)} files, {sum(s for _, s, _ in files) / 2**20:.1f} MB ({large / 2**20:.1f} MB as large "
          f"files) -> https://huggingface.co/spaces/{args.space}")
    if args.dry_run:
        return 0
    from huggingface_hub import HfApi

    api = HfApi(token=args.token)
    api.create_repo(args.space, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
    api.upload_folder(repo_id=args.space, repo_type="space", folder_path=str(ROOT),
                      allow_patterns=[str(path) for path, _, _ in files], commit_message="Deploy ReTree Studio")
    print(f"deployed: https://huggingface.co/spaces/{args.space}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
