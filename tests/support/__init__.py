"""What several test modules share (clients, doubles, ports, the stack's handle); test modules import from
here, never from one another."""
