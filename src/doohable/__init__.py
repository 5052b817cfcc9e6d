"""doohable: score the beauty of images for social walls on digital outdoor screens.

Data flows through the modules in this order::

    images -> store -> ingest -> ranking -> model -> moderation -> api / slack / batch / cli
"""

__version__ = "0.1.0"
