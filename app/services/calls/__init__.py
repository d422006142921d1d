"""Outbound calling: provider adapters, click-to-call (caps, refusals, caller-ID choice), status callbacks.

Data flow: the click-to-call view calls `dialing.click_to_call`, which reserves the call (seat, line,
windows, do-not-call, caps) in one transaction, commits, then asks the interface's adapter to dial. The
provider reports progress by signed status callbacks (`callbacks.receive`), which move the CallRecord
forward only, once per event, and turn a connected call into a follow-up.
"""
