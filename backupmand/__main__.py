from backupmand.cli import main

raise SystemExit(main())
