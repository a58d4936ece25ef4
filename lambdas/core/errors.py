"""Errors of the recognition core. Each carries a message a person can act on; the handlers turn
``InputError`` into a ``status: error`` result, the CLI into one red line."""


class FacerecError(Exception):
    """Base class for errors the core reports to people."""


class InputError(FacerecError):
    """The file given is not something we can recognise faces in (corrupt, empty, not a video...)."""


class GalleryError(FacerecError):
    """The gallery is missing, unreadable, or was made with other weights."""


class LegacyGalleryError(GalleryError):
    """The gallery is a torch file (an old facerec gallery or a course data.pt): the runtime never
    unpickles, so it must be converted on the CLI side (``facerec gallery convert OLD NEW``)."""
