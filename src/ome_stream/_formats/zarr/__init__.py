"""OME-Zarr v0.5 (Zarr v3): layout and metadata shared by every zarr backend."""
