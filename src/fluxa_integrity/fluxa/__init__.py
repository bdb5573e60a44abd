"""The Chatbot Fluxa data model, its dataset generator and fault injection."""
