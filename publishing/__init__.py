"""Publishing to the Hub: the model, the corpus and the Gradio Space as repos, with their cards."""
