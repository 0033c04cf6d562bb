"""The browser library (``polysocket.js``, its typings and the demo page) as package data, so a wheel
carries what ``polysocket dev`` serves under ``/client/``. No Python code lives here."""
