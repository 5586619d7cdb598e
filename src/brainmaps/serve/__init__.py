"""The web server of brainmaps (``brainmaps serve``)."""
