"""`python -m src.cli`: the same as the `vkp` console script."""

from src.cli.app import main

raise SystemExit(main())
