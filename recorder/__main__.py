from __future__ import annotations

from recorder.cli import main

raise SystemExit(main())
