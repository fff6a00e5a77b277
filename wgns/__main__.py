from wgns.cli import main

raise SystemExit(main())
