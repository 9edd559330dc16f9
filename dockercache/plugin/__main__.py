"""``python -m dockercache.plugin``: what hooks/command runs."""

from . import main

main()
