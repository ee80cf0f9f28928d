"""``python -m face2scene_core.fadex --config configs/fadex_default.yaml [--resume] [key=value ...]``."""

from .train import main

raise SystemExit(main())
