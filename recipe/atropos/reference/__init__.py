"""The user-facing reference the docs are generated from (scripts/gen_reference_docs.py): every
`atropos/*` metric and every recipe and launcher setting."""
