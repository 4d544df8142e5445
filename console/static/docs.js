// The API docs page: Swagger UI from npm, served by the console (no CDN, no inline script: the
// pages' Content-Security-Policy allows scripts from this server only).
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
