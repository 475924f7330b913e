"""`python -m bgen_assets.bench` (`make bench`)."""

from bgen_assets.bench import main

main()
