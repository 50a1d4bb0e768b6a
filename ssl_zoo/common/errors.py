"""The one exception type for mistakes a user can make; the CLI turns it into one line and exit code 2."""


class UserError(Exception):
    """A bad config, path or checkpoint: reported as one line, never a traceback."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
