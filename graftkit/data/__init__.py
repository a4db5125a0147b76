"""Embedded data makers shared by the methods' tests and demos; every one works offline and is seeded.

- :mod:`graftkit.data.text`: real English prose shipped with Python, with a word-level vocabulary.
- :mod:`graftkit.data.rare_words`: SYNTHETIC rows whose rare words mean what only their other sentences show.
- :mod:`graftkit.data.parallel`: a synthetic toy language pair (reordering + agreement), fairseq raw text.
- :mod:`graftkit.data.images`: scikit-learn's digits and sample images, scikit-image's photos (all real).
"""
