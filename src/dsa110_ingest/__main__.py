from dsa110_ingest.cli import main

raise SystemExit(main())
