"""Errors a user can act on. Their message names the file or stage and what to try."""


class SparsError(Exception):
    """Base of the errors spars-ns raises on bad input or a failed stage."""


class InputError(SparsError):
    """The user's input (folder, image, option) cannot be used as given."""


class SfMError(SparsError):
    """Structure-from-Motion could not register enough images."""
