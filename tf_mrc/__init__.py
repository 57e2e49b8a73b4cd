"""tf_mrc: fine-tune Chinese BERT-family encoders on Chinese machine reading comprehension."""
__version__ = "0.1.0"
