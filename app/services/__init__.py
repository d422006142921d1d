"""Domain logic free of Flask request state: views and jobs call these; these use the models."""
