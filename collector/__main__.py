"""``python -m collector --config collector.toml``: the collector agent (collector.agent.main)."""

from collector.agent import main

raise SystemExit(main())
