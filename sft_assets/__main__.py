from sft_assets.cli import main

raise SystemExit(main())
