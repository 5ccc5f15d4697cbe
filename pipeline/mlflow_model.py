"""The exported SavedModel as an MLflow pyfunc (MLflow "models from code").

Logged by the export stage; `mlflow.pyfunc.load_model(uri).predict(z)` returns
images (n, 28, 28, 1) in [-1, 1]. A conditional generator (its SavedModel's
`serve(z, digit)`) takes z and one digit per z by name:
`predict({"z": z, "digit": digits})` with z (n, z_dim) float32 and digits (n,)
int32 (one int for all z too), or a DataFrame of columns `z` (one vector a row)
and `digit`. Imports nothing from the pipeline so the logged model loads
anywhere TensorFlow does.
"""
import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model


def _z_and_digit(model_input) -> tuple[np.ndarray, np.ndarray]:
    """(z (n, z_dim) float32, digit (n,) int32) from a mapping or DataFrame holding both."""
    if hasattr(model_input, "columns"):  # a DataFrame: one row per z
        model_input = {k: model_input[k].tolist() for k in model_input.columns}
    if not hasattr(model_input, "keys") or "z" not in model_input or "digit" not in model_input:
        raise ValueError("digit: this generator is conditional: predict({'z': z, 'digit': digits}), "
                         "z (n, z_dim) float32 and one digit 0-9 per z")
    z = np.asarray(model_input["z"], np.float32)
    z = z.reshape(-1, z.shape[-1])
    digit = np.asarray(model_input["digit"]).reshape(-1)
    if digit.size == 1:
        digit = np.repeat(digit, len(z))
    if len(digit) != len(z):
        raise ValueError(f"digit: expected one digit per z ({len(z)}), got {len(digit)}")
    if digit.dtype.kind not in "iu" or ((digit < 0) | (digit > 9)).any():
        raise ValueError(f"digit: expected integers from 0 to 9, got {digit.tolist()[:10]}")
    return z, digit.astype(np.int32)


class SavedModelGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import tensorflow as tf

        self._model = tf.saved_model.load(context.artifacts["saved_model"])
        # serve(z), or serve(z, digit) for a conditional generator (pipeline/export.py).
        self._conditional = len(self._model.serve.input_signature) == 2

    def predict(self, context, model_input, params=None):
        if self._conditional:
            return self._model.serve(*_z_and_digit(model_input)).numpy()
        if hasattr(model_input, "keys") and "digit" in model_input:
            raise ValueError("digit: this generator is not conditional; predict(z) with z alone")
        z = np.asarray(model_input, dtype=np.float32)
        return self._model.serve(z).numpy()


set_model(SavedModelGenerator())
