"""The render stage: artifacts -> Markdown pages -> mkdocs site. Never imports torch."""
