from ipa_backup.cli import main

raise SystemExit(main())
