"""The app's user interface: one module per tab (its layout and its event handlers), `app` assembling them."""
from .app import Handlers, build_app, launch, main

__all__ = ["Handlers", "build_app", "launch", "main"]
