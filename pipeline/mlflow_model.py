"""The exported SavedModel as an MLflow pyfunc (MLflow "models from code").

Logged by the export stage; `mlflow.pyfunc.load_model(uri).predict(z)` returns
images (n, 28, 28, 1) in [-1, 1]. Imports nothing from the pipeline so the
logged model loads anywhere TensorFlow does.
"""
import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model


class SavedModelGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import tensorflow as tf

        self._model = tf.saved_model.load(context.artifacts["saved_model"])

    def predict(self, context, model_input, params=None):
        z = np.asarray(model_input, dtype=np.float32)
        return self._model.serve(z).numpy()


set_model(SavedModelGenerator())
