"""Port forwards: publish a service of a confined namespace on the host (docs/forwards.md).

* :mod:`.spec` - what a forward is and needs (parsing, openings, nft rulesets); pure
* :mod:`.plan` - forwards -> ops (pure): ``ops_for_profile`` for `wgns up`, ``ops_for_forward``
* :mod:`.ops` - the ops, one per resource (port claim, veth, ingress forwarding, DNAT,
  kill switch opening, relay)
* :mod:`.runtime` - `wgns forward add|remove|list` and relay repair
* :mod:`.claims`, :mod:`.ingress` - host port and pool claims; where remote sources arrive
* :mod:`.relay`, :mod:`.relayd`, :mod:`.supervise` - the relay process and its supervision

Nothing is imported here: the relay process imports only what it runs.
"""
