"""What the chapters show: the schedule explorer (ipywidgets, and a kernel-free JavaScript twin), figures, and
each chapter's opening box (:mod:`~amata_lib.book.scaffold`)."""
