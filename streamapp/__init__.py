"""streamapp: online machine learning on Kafka streams, one River model per partition."""

__version__ = "0.1.0"
