"""The demo's W&B run: opened with an explicit folder, offline without credentials, summarised.

W&B trouble never stops the demo: every call here swallows its errors.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["finish_wandb_run", "start_wandb_run", "wandb_credentials", "wandb_summary"]


def wandb_credentials() -> bool:
    """Whether W&B can log in without asking: an API key in the environment or ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start_wandb_run(run_dir: Path) -> None:
    """Open the demo's W&B run with an explicit folder; the Trainer's W&B callback reuses it.

    Passing ``dir`` here (rather than only through ``WANDB_DIR``) matters because W&B
    caches its settings process-wide on first use: a second run in the same process would
    otherwise write under the first run's folder.
    """
    try:
        import wandb
    except ImportError:
        return
    try:
        wandb.init(
            dir=os.environ.get("WANDB_DIR") or str(run_dir),
            project=os.environ.get("WANDB_PROJECT", "sft-interactions-demo"),
            name=run_dir.name,
            mode=os.environ.get("WANDB_MODE") or None,
            reinit="finish_previous",
        )
    except Exception as exc:  # noqa: BLE001 - W&B trouble never stops the demo
        warnings.warn(
            f"W&B could not start ({type(exc).__name__}: {exc}); the demo goes on", stacklevel=2
        )


def finish_wandb_run() -> None:
    """Close the demo's W&B run, if one is open (so a next run in this process starts clean)."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.run.finish()
    except Exception:  # noqa: BLE001
        pass


def wandb_summary(summary: Mapping[str, Any]) -> None:
    """Put the demo's headline numbers into the W&B run summary, then finish the run."""
    try:
        import wandb
    except ImportError:
        return
    run = wandb.run
    if run is None:
        return
    flat = {
        "demo/stop_step": summary["stop"]["step"],
        "demo/accuracy_step0": summary["accuracy"]["step0"],
        "demo/accuracy_stop": summary["accuracy"]["stop"],
        "demo/accuracy_best": summary["accuracy"]["best"],
        "demo/accuracy_end": summary["accuracy"]["end"],
        "demo/removed_share_before_stop": summary["removal"]["share_before_stop"],
    }
    try:
        for k, v in flat.items():
            run.summary[k] = v
        run.finish()
    except Exception:  # noqa: BLE001
        pass
