"""Static files (the admin's and the self-hosted schema UI's) served by the web process itself."""

from __future__ import annotations

import os

from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, reading the installed apps' static folders directly (WHITENOISE_USE_FINDERS), so
    no collectstatic step is needed; STATIC_ROOT is used only when it exists."""

    def add_files(self, root, prefix=None):
        if root and not os.path.isdir(root):
            return  # nothing collected: the finders provide every file
        super().add_files(root, prefix)
