"""Autoscaling policies for the decision lab, one module each behind one small interface (`base`):
`hpa_kv`, `keda_queue`, `static_peak`, `oracle`; the production scaler core is `services.lab.wva_policy`.
"""
