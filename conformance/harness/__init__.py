"""The harness: what runs any implementation of any operator against its reference and records the result.

- :mod:`.registry`: which implementations exist (built-in adapter and transform modules, third parties'
  ``module:attribute``) and which a run selects;
- :mod:`.isolation` and :mod:`.processes`: worker processes, bounded and never left behind;
- :mod:`.mirror`: an implementation and its reference side driven in lockstep, every comparison recorded;
- :mod:`.deviations`: the registry of known, explained differences;
- :mod:`.conformance` and :mod:`.plugin`: the pytest plugin and the ``conformance`` fixture the checks use.
"""
