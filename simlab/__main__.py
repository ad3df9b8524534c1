"""``python -m simlab`` is the same as the ``simlab`` command."""

from simlab.cli.main import main

raise SystemExit(main())
