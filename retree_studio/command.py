"""The `retree` console command: the engine's commands (retree_core.cli), `retree app` for the web app and
`retree deploy-space OWNER/NAME` (deploy.py)."""
from __future__ import annotations

import sys

from retree_core.cli import main as engine_main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["deploy-space"]:
        from .deploy import main as deploy_main

        return deploy_main(argv[1:])
    if argv[:1] == ["app"]:
        try:
            from .ui import main as app_main  # gradio is imported only for the app
        except ImportError as exc:
            print(f"error: retree app needs the app extra ({exc}): pip install 'retree-studio[app]'", file=sys.stderr)
            return 1
        app_main(argv[1:])
        return 0
    return engine_main(argv)


if __name__ == "__main__":
    sys.exit(main())
