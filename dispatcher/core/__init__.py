"""The pure domain of the dispatcher: state machines and rules fed values, answering values.

No I/O here and no I/O library (import contracts): every module is unit- and property-tested by
feeding it.
"""
