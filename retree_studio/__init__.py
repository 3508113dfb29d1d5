"""ReTree Studio: the Gradio app over the `retree_core` engine (settings, model catalogue, background jobs,
live frames, mask sources, validated UI options, uploads and zips; `ui/` has one module per tab).
The engine never imports this package."""
