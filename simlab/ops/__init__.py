"""Pure JAX operations under the layers that use them: linear maps (dense, 1-D and 2-D
convolutions, pooling, normalizations) and the custom-gradient feedback pathway."""
