"""`python -m keras_attn` runs the `keras-attn` command."""

from keras_attn.cli import main

raise SystemExit(main())
