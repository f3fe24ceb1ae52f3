"""What the chapters show: the schedule explorer (ipywidgets, and a kernel-free JavaScript twin) and figures."""
