"""OME-TIFF: OME-XML built with ome-types, pages written with tifffile."""
