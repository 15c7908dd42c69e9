"""``python -m dubbo``: the command line (dubbo/cli)."""

from .cli import main

raise SystemExit(main())
