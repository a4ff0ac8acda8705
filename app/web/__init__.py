"""The web surface, moving here one resource at a time: REST handlers grouped by resource."""
