"""``gptedge inspect``: look inside the model on the command line (``figures`` draws the
attention heatmaps and the layer-by-layer guesses; the numbers come from the runtime's
inspection variant, which ``gptedge inspect --make`` adds to a bundle via ``export.inspection``)."""
