from core.imaging import main

raise SystemExit(main())
