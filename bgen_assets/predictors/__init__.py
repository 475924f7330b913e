"""Next-intent predictors: the shared core (bgen_assets/predictors/core.py: windows, encoder, training
loop, predictions), one module per backbone (bert4rec.py, pituning.py), BehaviorLM's progressive
fine-tuning (behaviorlm.py) and the metrics (metrics.py)."""
