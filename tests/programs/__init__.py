"""Programs written the way Pyro users write them, to test that ppl_vae takes any program.

Each is a ``torch.nn.Module`` with Pyro ``model``/``guide`` methods in Pyro's own idioms (other site and
plate names, ``pyro.param``, globals outside the plate, conditioning inputs, enumeration, nested and
unsized plates) and a ``torch_log_weights(*batch, k=, generator=)`` that computes the same
``log p(x, z) - log q(z | x)``, ``(k, N)``, in plain torch on the same networks: an independent
importance sampler the library's estimators are checked against.
"""
