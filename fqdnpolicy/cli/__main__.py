"""``python -m fqdnpolicy.cli``: the ``fqdnpolicy`` command."""

from fqdnpolicy.cli import main

raise SystemExit(main())
