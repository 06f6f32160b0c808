"""``python -m tasks``: run every task in order (see tasks/all.py)."""

from tasks.all import main

raise SystemExit(main())
