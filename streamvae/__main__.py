"""``python -m streamvae`` runs the command line."""

from streamvae.cli import main

raise SystemExit(main())
